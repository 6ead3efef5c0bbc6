#!/bin/sh
# The compose stack's one-shot `config` service (docker-compose.yml): copies the checkout's files the
# broker and Grafana read into named volumes, so those containers read copies with modes of their own
# and never the checkout itself.
#
#   compose/stage-config.sh SRC DEST [MOUNTPOINT ...]
#
# Each folder SRC/NAME (the checkout's files, bind-mounted read-only) replaces the files of DEST/NAME
# (a named volume): folders 755, files 644, owned by the caller (root in compose). It runs on every
# `docker compose up`, so an edited file reaches the volume then (Grafana reloads the boards within
# 30 s; the broker on `docker compose restart mosquitto`). Then each
# MOUNTPOINT, a path under DEST, is made as an empty folder: where compose mounts another volume
# inside a read-only one, which Docker cannot create itself.
#
# Why copies: a checkout made with umask 077 is owner-only, unreadable to the broker (uid 1883) and
# Grafana (uid 472), and on SELinux hosts only a container that mounts the files with a label reads
# them. None of these files is a secret (the secrets are in the `mqtt-secrets` volume).
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "stage-config: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

src=${1:?usage: stage-config.sh SRC DEST [MOUNTPOINT ...]}
dest=${2:?usage: stage-config.sh SRC DEST [MOUNTPOINT ...]}
shift 2

umask 022
# Everything is checked before anything is copied: a refused file leaves the volumes as they were.
for from in "$src"/*/; do
    [ -d "$dest/$(basename "$from")" ] || { echo "stage-config: $dest/$(basename "$from") is not a folder (a volume compose mounts there)" >&2; exit 2; }
    # Config files with CRLF would reach the broker with a CR in every value: refuse, naming the file.
    found=$(grep -rl "$cr" "$from" | head -n 1) || true
    if [ -n "$found" ]; then
        echo "stage-config: $found has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2
        exit 1
    fi
done
for from in "$src"/*/; do
    to="$dest/$(basename "$from")"
    # Replace, not merge: a file deleted from the checkout disappears from the volume too. Folders
    # stay: one may be a mountpoint a running container uses (removing it would unmount it there).
    # ("$to/": DEST/NAME may also be a link to the folder.)
    find "$to/" -mindepth 1 ! -type d -delete
    cp -R "$from". "$to/"
    find "$to/" -type d -exec chmod 755 {} + -o -type f -exec chmod 644 {} +
done
for mountpoint in "$@"; do
    mkdir -p "$dest/$mountpoint"
    chmod 755 "$dest/$mountpoint"
done
echo "stage-config: copied $(cd "$src" && echo */ | tr -d /) into $dest"
