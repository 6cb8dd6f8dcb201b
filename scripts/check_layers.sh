#!/bin/sh
# check_layers.sh - the library's layers, bottom to top, and the rule that holds them:
# a file may include headers of its own folder and of folders on a lower layer, never of a
# folder on its own layer or above (so there are no cycles between folders). No file
# anywhere includes a .c file. tests/, bench/ and fuzz/ sit above everything.
# Prints each violation as FILE:LINE and exits 1 when there is any. (docs/architecture.md
# draws the same picture.)
cd "$(dirname "$0")/.." || exit 1
# folder:layer
LAYERS="codec:0 formats:1 comm:2 eval:3 quant:4 distill:4 prune:5 pipeline:6 cli:7 tests:8 bench:8 fuzz:8"
level() {
    for e in $LAYERS; do [ "${e%%:*}" = "$1" ] && { echo "${e#*:}"; return; }; done
    echo ""
}
bad=0
for dir in codec formats comm eval quant distill prune pipeline cli tests bench fuzz; do
    [ -d "$dir" ] || continue
    mine=$(level "$dir")
    for f in $(find "$dir" -name '*.[ch]' | sort); do
        # "#include "folder/name.h"" lines with their line numbers
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r hit; do
            line=${hit%%:*}
            inc=$(printf '%s\n' "$hit" | sed -E 's/.*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/')
            case "$inc" in
            *.c) echo "$f:$line: includes the source file \"$inc\" (link it instead)"; echo x ;;
            */*)
                target=${inc%%/*}
                their=$(level "$target")
                [ -z "$their" ] && continue # a system-style path such as "omp/..."
                if [ "$target" != "$dir" ] && [ "$their" -ge "$mine" ]; then
                    echo "$f:$line: $dir/ (layer $mine) includes \"$inc\" ($target/, layer $their)"; echo x
                fi ;;
            esac
        done
    done
done >/tmp/check_layers.$$
grep -v '^x$' /tmp/check_layers.$$
n=$(grep -c '^x$' /tmp/check_layers.$$)
rm -f /tmp/check_layers.$$
if [ "$n" -gt 0 ]; then
    echo "check-layers: $n include(s) against the layer order ($LAYERS)"
    exit 1
fi
echo "check-layers: every include follows the layer order codec < formats < comm < eval < quant, distill < prune < pipeline < cli"
