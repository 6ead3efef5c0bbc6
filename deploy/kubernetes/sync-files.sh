#!/bin/sh
# Copies the repository's files the Kubernetes ConfigMaps are generated from into
# deploy/kubernetes/base/files/, at their paths in the repository:
#
#   sh deploy/kubernetes/sync-files.sh        (or: make kubernetes-files)
#
# Why copies: kustomize reads only files at or below a kustomization's folder (`kubectl apply -k`
# has no flag to lift that, and a symlink to a file outside is refused too), and the broker's and
# Grafana's files live in brokers/ and dashboards/. Run it after editing those files and commit the
# copies; tests/test_kubernetes.py fails, naming the file, while a copy differs from its original
# or a file is missing or left over. It needs only sh and cp, not iotsim.
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "sync-files: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
files="$root/deploy/kubernetes/base/files"

# The folders copied whole, and the broker's two files (its scripts beside them are no config).
folders="brokers/conf.d dashboards/provisioning/datasources dashboards/provisioning/dashboards dashboards/provisioning/plugins dashboards/provisioning/alerting dashboards/json"
single="brokers/secure/mosquitto.conf brokers/secure/acl"

# Replace, not merge: a file deleted from the repository disappears from the copies too.
rm -rf "$files"
for folder in $folders; do
    mkdir -p "$files/$folder"
    cp "$root/$folder/"* "$files/$folder/"
done
for file in $single; do
    mkdir -p "$files/$(dirname "$file")"
    cp "$root/$file" "$files/$file"
done
echo "sync-files: copied $folders $single into deploy/kubernetes/base/files"
