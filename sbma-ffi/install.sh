#!/usr/bin/env bash
# Installs libsbma for C programs: the shared and static libraries, sbma.h
# and a pkg-config file (sbma.pc), under PREFIX (default /usr/local).
#
#   sbma-ffi/install.sh [PREFIX]
#   cc prog.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs sbma)
#
# (cargo-c's `cargo cinstall` is the ecosystem's general tool for this; this
# script needs only cargo and does the same for this crate.)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
cargo build --profile preload -p sbma-ffi
target=${CARGO_TARGET_DIR:-target}/preload
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$target/libsbma.so" "$prefix/lib/libsbma.so"
install -m 0644 "$target/libsbma.a" "$prefix/lib/libsbma.a"
install -m 0644 sbma-ffi/include/sbma.h "$prefix/include/sbma.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$prefix/lib|" \
    -e "s|@INCLUDEDIR@|$prefix/include|" -e "s|@VERSION@|$version|" \
    sbma-ffi/sbma.pc.in > "$prefix/lib/pkgconfig/sbma.pc"
echo "installed libsbma $version under $prefix (pkg-config: $prefix/lib/pkgconfig/sbma.pc)"
