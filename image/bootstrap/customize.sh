#!/bin/sh
# mmdebstrap customize hook: runs once per cached base root, with the root as $1.
# Generates the two locales, then drops what only building them needed.
set -eu
root="$1"

printf 'en_US.UTF-8 UTF-8\nzh_CN.UTF-8 UTF-8\n' > "$root/etc/locale.gen"
chroot "$root" locale-gen
printf 'LANG=en_US.UTF-8\n' > "$root/etc/default/locale"

# Sources of locales and charmaps are only needed by locale-gen.
rm -rf "$root/usr/share/i18n/locales" "$root/usr/share/i18n/charmaps"
# Caches and logs that would differ between two builds.
rm -rf "$root/var/cache/apt/"*.bin "$root/var/cache/ldconfig/aux-cache" \
	"$root/var/log/"*.log "$root/var/log/apt" "$root/var/cache/debconf/"*-old
: > "$root/etc/machine-id"
