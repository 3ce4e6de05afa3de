#!/bin/bash
# Makes a small throw-away PKI for NBD over TLS, for tests and trials (not for production keys):
#   DIR/ca-cert.pem, DIR/ca-key.pem            a CA
#   DIR/server-cert.pem, DIR/server-key.pem    for `basalt serve --nbd-tls-cert/--nbd-tls-key`, valid for
#                                              127.0.0.1, ::1 and localhost (plus any names given as arguments)
#   DIR/client/{ca-cert,client-cert,client-key}.pem
#                                              a client's directory, as qemu's tls-creds-x509 (dir=) and libnbd's
#                                              tls-certificates= expect it
#   DIR/anonymous/ca-cert.pem                  a client that checks the server but has no certificate
# Usage: nbd-tls-pki.sh DIR [EXTRA-DNS-NAME...]
set -euo pipefail
DIR=${1:?usage: nbd-tls-pki.sh DIR [EXTRA-DNS-NAME...]}
shift
mkdir -p "$DIR/client" "$DIR/anonymous"
cd "$DIR"
names="IP:127.0.0.1,IP:::1,DNS:localhost"
for name in "$@"; do names="$names,DNS:$name"; done
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=basalt NBD test CA" -keyout ca-key.pem -out ca-cert.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# qemu insists on keyEncipherment in the key usage, even for EC keys.
issue() { # NAME SUBJECT EXTENSIONS
    printf '%b' "$3" > "$1.ext"
    openssl req -new "${ec[@]}" -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
issue server localhost "subjectAltName=$names\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
issue client "basalt NBD test client" "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
chmod 600 ./*-key.pem

cp ca-cert.pem client/ca-cert.pem
mv client-cert.pem client-key.pem client/
cp ca-cert.pem anonymous/ca-cert.pem
