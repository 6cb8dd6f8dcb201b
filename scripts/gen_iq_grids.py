import re,sys
src=open('/tmp/slmc-peer/llama.cpp-b4747/ggml/src/ggml-common.h').read()  # the peer's source (../shared/peer)
def table(name):
    m=re.search(r'GGML_TABLE_BEGIN\((\w+), '+name+r', (\w+)\)(.*?)GGML_TABLE_END', src, re.S)
    nums=re.findall(r'0x[0-9a-fA-F]+|\b\d+\b', m.group(3))
    return m.group(1), [int(x,0) for x in nums]
out=[]
out.append('''/* iq_grids.c - the codebooks of llama.cpp's i-quants, as data (see iq_grids.h).
 *
 * Generated from ggml's tables (ggml/src/ggml-common.h, llama.cpp b4747) by
 * scripts/gen_iq_grids.py; the numbers are facts of the GGUF format, not code. Each entry packs
 * one grid point: one byte per coordinate, lowest byte = first value.
 */
#include "codec/iq_grids.h"
''')
qsrc=open('/tmp/slmc-peer/llama.cpp-b4747/ggml/src/ggml-quants.c').read()
lv=re.search(r'kvalues_iq4nl\[16\] = \{([^}]*)\}', qsrc).group(1)
out.append('const int8_t IQ4_LEVELS[16] = {%s};\n' % ', '.join(x.strip() for x in lv.split(',')))
for name,cname,width,per in [('iq2xxs_grid','IQ2XXS_GRID',16,4),('iq2xs_grid','IQ2XS_GRID',16,4),('iq2s_grid','IQ2S_GRID',16,4),
                   ('iq3xxs_grid','IQ3XXS_GRID',8,8),('iq3s_grid','IQ3S_GRID',8,8),('iq1s_grid','IQ1S_GRID',16,4)]:
    t,v=table(name)
    ct='uint64_t' if t=='uint64_t' else 'uint32_t'
    out.append('const %s %s[%d] = {' % (ct,cname,len(v)))
    for i in range(0,len(v),per):
        out.append('    '+' '.join('0x%0*x,'%(width,x) for x in v[i:i+per]))
    out.append('};\n')
open(sys.argv[1],'w').write('\n'.join(out))
