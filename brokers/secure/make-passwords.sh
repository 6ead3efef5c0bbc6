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
#                  publish only on its own topics and its status topic
#
# DEVICES_FROM=FILE adds a user per line of FILE ("-": standard input; empty lines skipped), e.g. every
# device of a scenario, each logging in as itself (docs/security.md):
#   iotsim devices scenarios/city-day.yaml | DEVICES_FROM=- brokers/secure/make-passwords.sh
#
# Each password is a random 32-hex-digit string in DIR/passwords/<user> (owner-only), which is what a
# client passes: MQTT_PASSWORD=$(cat DIR/passwords/simulator). Existing password files are kept, so
# running it again only adds new users; DIR/passwd (salted hashes, the broker's password_file) is
# rebuilt every time from the password files of the users named (the shared ones, the arguments and
# DEVICES_FROM). Restart the broker, or send it SIGHUP, to load a new passwd.
# Fleets of thousands: one openssl run makes every new password and one mosquitto_passwd run hashes
# them all (15,000 users in seconds); the loop over the users runs only shell builtins.
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "make-passwords: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

dir=${1:-$(dirname "$0")/generated}
[ $# -gt 0 ] && shift
users="simulator city-devices port-devices bridge healthcheck${*:+ $*}"
devices_from=${DEVICES_FROM:-}
if [ -n "$devices_from" ] && [ "$devices_from" != - ] && ! { [ -f "$devices_from" ] && [ -r "$devices_from" ]; }; then
    echo "make-passwords: DEVICES_FROM=$devices_from is not a readable file" >&2; exit 2
fi

command -v mosquitto_passwd >/dev/null || {
    echo "make-passwords: mosquitto_passwd is not installed; on Debian: sudo apt-get install mosquitto" >&2; exit 1; }
command -v openssl >/dev/null || { echo "make-passwords: openssl is not installed; on Debian: sudo apt-get install openssl" >&2; exit 1; }

umask 077
mkdir -p "$dir/passwords"
plain="$dir/passwd.plain"
names="$dir/users.list"  # the users, one a line, each once, in the order given
new="$dir/users.new"     # those without a password yet
trap 'rm -f "$plain" "$names" "$new"' EXIT
{
    for user in $users; do printf '%s\n' "$user"; done
    if [ -n "$devices_from" ]; then cat -- "$devices_from"; fi
} | awk 'length($0) && !seen[$0]++' >"$names"
count=0
: >"$new"
while IFS= read -r user; do
    case $user in
        *"$cr"*) echo "make-passwords: '$(printf '%s' "$user" | tr -d '\r')' ends in a CR (a list with CRLF line endings?); give the names with LF" >&2; exit 2 ;;
        *[!A-Za-z0-9_-]*) echo "make-passwords: '$user' is not a valid user name (letters, digits, _ and - only)" >&2; exit 2 ;;
    esac
    count=$((count + 1))
    [ -s "$dir/passwords/$user" ] || printf '%s\n' "$user" >>"$new"
done <"$names"
if [ -s "$new" ]; then
    # One random 16-byte password per new user, from one openssl run.
    openssl rand -hex $((16 * $(awk 'END { print NR }' "$new"))) | fold -w 32 >"$plain"
    while IFS= read -r user && IFS= read -r password <&3; do
        printf '%s\n' "$password" >"$dir/passwords/$user"
    done <"$new" 3<"$plain"
fi
while IFS= read -r user; do
    password=
    IFS= read -r password <"$dir/passwords/$user" || :  # a file without a final newline still counts
    case $password in
        *"$cr"*) echo "make-passwords: $dir/passwords/$user has a CR (CRLF line ending): the password would hold it; rewrite the file with LF" >&2; exit 1 ;;
    esac
    printf '%s:%s\n' "$user" "$password"
done <"$names" >"$plain"
# `mosquitto_passwd -U` hashes a plain user:password file in place: no password on a command line.
mosquitto_passwd -U "$plain"
mv "$plain" "$dir/passwd"
# The broker reads passwd as its own user (uid 1883 in the eclipse-mosquitto image); it holds only
# salted hashes. The plain passwords in passwords/ stay owner-only.
chmod 644 "$dir/passwd"
if [ "$count" -le 20 ]; then
    echo "make-passwords: wrote $dir/passwd for: $(tr '\n' ' ' <"$names" | sed 's/ $//') (passwords in $dir/passwords/)"
else
    echo "make-passwords: wrote $dir/passwd for $count users: $(head -n 5 "$names" | tr '\n' ' ')... (passwords in $dir/passwords/)"
fi
