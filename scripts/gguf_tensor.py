#!/usr/bin/env python3
"""gguf_tensor.py FILE NAME OUT - write the raw bytes of tensor NAME of GGUF FILE to OUT.

A minimal GGUF v3 reader (header, key/values skipped, tensor infos) for making reference files
with llama.cpp's tools (scripts/make_iq_refs.sh); slmc itself reads GGUF in formats/gguf.c.
"""
import struct, sys

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar kv types
# (block size, bytes per block) of every ggml type id, as codec/types.c lists them
TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
         16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
         22: (256, 82), 23: (256, 136), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66)}


def main(path, name, out):
    f = open(path, 'rb')
    data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from('<' + fmt, data, pos)
        pos += struct.calcsize('<' + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take('Q')
        s = data[pos:pos + n]
        pos += n
        return s.decode()

    def skip_value(t):
        nonlocal pos
        if t == 8:
            string()
        elif t == 9:
            et, n = take('I'), take('Q')
            for _ in range(n):
                skip_value(et)
        else:
            pos += SIZES[t]

    assert data[:4] == b'GGUF', 'not a GGUF file'
    pos = 4
    take('I')
    n_tensors, n_kv = take('Q'), take('Q')
    align = 32
    for _ in range(n_kv):
        key = string()
        t = take('I')
        if key == 'general.alignment':
            align = take('I')
        else:
            skip_value(t)
    infos = []
    for _ in range(n_tensors):
        nm = string()
        nd = take('I')
        ne = [take('Q') for _ in range(nd)]
        t = take('I')
        off = take('Q')
        infos.append((nm, ne, t, off))
    base = (pos + align - 1) // align * align
    for nm, ne, t, off in infos:
        if nm == name:
            n = 1
            for e in ne:
                n *= e
            bs, ts = TYPES[t]
            size = n // bs * ts
            open(out, 'wb').write(data[base + off:base + off + size])
            return
    sys.exit('%s: no tensor %s' % (path, name))


if __name__ == '__main__':
    main(*sys.argv[1:4])
