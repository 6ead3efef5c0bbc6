#!/bin/sh
# Make the secure profile's password file (docs/security.md) with mosquitto_passwd.
#
#   brokers/secure/make-passwords.sh [DIR [DEVICE_ID ...]]    DIR defaults to brokers/secure/generated
#
# Identities (what each may do is in brokers/secure/acl):
#   simulator      the testbed's publisher: one connection for many simulated devices
#   city-devices   class credential for city fleets (load workers, gateways)
#   port-devices   class credential for port fleets
#   bridge         the ingest bridge: reads, never publishes
#   healthcheck    the compose broker's healthcheck: reads $SYS/broker/uptime, nothing else
#   DEVICE_ID ...  optional: one user per real device, named by its device id (aq-0007), which may
#                  publish only on its own topics
#
# Each password is a random 32-hex-digit string in DIR/passwords/<user> (owner-only), which is what a
# client passes: MQTT_PASSWORD=$(cat DIR/passwords/simulator). Existing password files are kept, so
# running it again only adds new users; DIR/passwd (salted hashes, the broker's password_file) is
# rebuilt from them every time. Restart the broker, or send it SIGHUP, to load a new passwd.
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "make-passwords: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

dir=${1:-$(dirname "$0")/generated}
[ $# -gt 0 ] && shift
users="simulator city-devices port-devices bridge healthcheck${*:+ $*}"

command -v mosquitto_passwd >/dev/null || {
    echo "make-passwords: mosquitto_passwd is not installed; on Debian: sudo apt-get install mosquitto" >&2; exit 1; }
command -v openssl >/dev/null || { echo "make-passwords: openssl is not installed; on Debian: sudo apt-get install openssl" >&2; exit 1; }

umask 077
mkdir -p "$dir/passwords"
plain="$dir/passwd.plain"
: >"$plain"
for user in $users; do
    case $user in
        *[!A-Za-z0-9_-]*) echo "make-passwords: '$user' is not a valid user name (letters, digits, _ and - only)" >&2; rm -f "$plain"; exit 2 ;;
    esac
    [ -s "$dir/passwords/$user" ] || openssl rand -hex 16 >"$dir/passwords/$user"
    if grep -q "$cr" "$dir/passwords/$user"; then
        echo "make-passwords: $dir/passwords/$user has a CR (CRLF line ending): the password would hold it; rewrite the file with LF" >&2; rm -f "$plain"; exit 1
    fi
    printf '%s:%s\n' "$user" "$(cat "$dir/passwords/$user")" >>"$plain"
done
# `mosquitto_passwd -U` hashes a plain user:password file in place: no password on a command line.
mosquitto_passwd -U "$plain"
mv "$plain" "$dir/passwd"
# The broker reads passwd as its own user (uid 1883 in the eclipse-mosquitto image); it holds only
# salted hashes. The plain passwords in passwords/ stay owner-only.
chmod 644 "$dir/passwd"
echo "make-passwords: wrote $dir/passwd for: $users (passwords in $dir/passwords/)"
