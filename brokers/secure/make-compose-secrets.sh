#!/bin/sh
# The compose stack's one-shot `secrets` service (docker-compose.yml): the secure profile's test CA,
# broker certificate and passwords in DIR, a named volume, each file readable by whoever needs it.
#
#   brokers/secure/make-compose-secrets.sh DIR [CLIENT_USER [BROKER_OWNER]]
#
# Compose runs it as root in the iotsim image (which has openssl and mosquitto_passwd) before the
# broker starts, with CLIENT_USER = iotsim, the user the bridge and the simulator run as, and
# BROKER_OWNER = 1883:1883, the uid and gid eclipse-mosquitto drops to. Without them, files keep the
# caller's owner.
#
# Who reads what from the volume:
#   broker (BROKER_OWNER)    passwd, server.key: owner-only, owned by it
#                            ca.crt, server.crt: world-readable (certificates are public)
#   broker healthcheck       passwords/healthcheck: world-readable; that identity may only read the uptime
#   bridge, simulator        passwords/<user>: owner-only, owned by CLIENT_USER (the two share it: one image user)
#   no service               ca.key: owner-only, root's
# Mosquitto 2.0.16 and newer warn about a password file that others can read or that the broker's
# user and group do not own, and say future versions will refuse it: hence the chown.
#
# The two scripts keep what exists, so running it again (every `docker compose up`) keeps the secrets;
# `docker compose down -v` deletes the volume and with it every password and the CA.
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "make-compose-secrets: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

dir=${1:?usage: make-compose-secrets.sh DIR [CLIENT_USER [BROKER_OWNER]]}
client_user=${2:-}
broker_owner=${3:-}
here=$(dirname "$0")

sh "$here/make-test-certs.sh" "$dir"
sh "$here/make-passwords.sh" "$dir"

# The volume's root and passwords/ may be entered by every user, but passwords/ cannot be listed:
# a container's user opens only a file it knows the name of, and only if the file's mode lets it.
chmod 755 "$dir"
chmod 711 "$dir/passwords"
chmod 644 "$dir/passwords/healthcheck"
if [ -n "$client_user" ]; then
    chown -R "$client_user" "$dir/passwords"
fi
if [ -n "$broker_owner" ]; then
    chown "$broker_owner" "$dir/passwd" "$dir/server.key"
    chmod 600 "$dir/passwd" "$dir/server.key"
fi
echo "make-compose-secrets: $dir ready (passwords for ${client_user:-$(id -un)}, broker files for ${broker_owner:-$(id -un)})"
