#!/bin/sh
# Make a test certificate authority and a broker certificate signed by it, for the secure profile's
# TLS listener (docs/security.md). Test material only: the CA key sits next to the certificates.
#
#   brokers/secure/make-test-certs.sh [DIR]      DIR defaults to brokers/secure/generated (git-ignored)
#
# Writes DIR/ca.crt (give it to clients: `--ca-file`, scenario `mqtt.ca_file`, mosquitto_sub --cafile),
# DIR/ca.key, DIR/server.crt and DIR/server.key. Existing files are kept, so running it again changes
# nothing; delete DIR (or set FORCE=1) for new ones.
#
# Environment, each with its default:
#   SERVER_NAMES="localhost mosquitto"   DNS names the broker certificate is valid for (compose service name)
#   SERVER_IPS="127.0.0.1 ::1"            IP addresses it is valid for
#   DAYS=825                              validity of both certificates, in days
#   FORCE=0                               1 = replace existing files
# Each line of the guard ends in '#': run with CRLF line endings, the CR falls into a comment.
cr=$(printf '\r') #
if grep -q "$cr" "$0"; then echo "make-test-certs: $0 has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)" >&2; exit 1; fi #
set -eu

dir=${1:-$(dirname "$0")/generated}
names=${SERVER_NAMES:-localhost mosquitto}
ips=${SERVER_IPS:-127.0.0.1 ::1}
days=${DAYS:-825}

command -v openssl >/dev/null || { echo "make-test-certs: openssl is not installed; on Debian: sudo apt-get install openssl" >&2; exit 1; }

if [ "${FORCE:-0}" != 1 ] && [ -s "$dir/ca.crt" ] && [ -s "$dir/server.crt" ] && [ -s "$dir/server.key" ]; then
    echo "make-test-certs: $dir already has ca.crt, server.crt and server.key; keeping them (FORCE=1 to replace)"
    exit 0
fi
mkdir -p "$dir"
# Keys are created readable by the owner only; see the chmod below for the broker's key.
umask 077

# The broker's certificate names: every host name and IP address clients may connect to, since
# clients check the name they dialled against these (paho and mosquitto_sub verify by default).
san=""
for name in $names; do san="$san,DNS:$name"; done
for ip in $ips; do san="$san,IP:$ip"; done
san=${san#,}

# EC P-256 keys: small, fast handshakes, supported by Mosquitto 2, paho and OpenSSL 1.1+.
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -days "$days" -subj "/O=Yangquan IoT testbed/CN=Yangquan testbed test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/O=Yangquan IoT testbed/CN=mosquitto" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/server.crt" -days "$days" -extfile "$dir/server.ext" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"

# Certificates are public. The broker's key must be readable by the user Mosquitto runs as: the
# local stack runs it as you; the eclipse-mosquitto image as uid 1883, hence world-readable here.
# Acceptable for a test key in a git-ignored folder; never for a real one.
chmod 644 "$dir/ca.crt" "$dir/server.crt" "$dir/server.key"
echo "make-test-certs: wrote $dir/ca.crt, $dir/server.crt, $dir/server.key (valid for $san, $days days)"
