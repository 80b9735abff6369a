#!/usr/bin/env bash
# Development PKI for clusters without cert-manager: a CA and a serving certificate for the
# webhook Service (<service>.<namespace>.svc), written into the self-signed overlay together
# with the caBundle patch. Re-run to rotate; the webhook reloads the Secret without a restart.
#
# Usage: certs/generate.sh [--service NAME] [--namespace NS] [--days N] [--out DIR]
set -euo pipefail

service=kubevirt-bmc-webhook
namespace=kubevirt-bmc
days=365
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/manifests/overlays/self-signed"

while [ $# -gt 0 ]; do
  case "$1" in
    --service) service=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "generate.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "generate.sh: openssl is required" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.crt" -days "$days" \
  -subj "/CN=kubevirt-bmc webhook CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

cat > "$work/san.cnf" <<CNF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local,DNS:${service}.${namespace},DNS:${service}
CNF
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=${service}.${namespace}.svc" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/tls.crt" -days "$days" -extfile "$work/san.cnf" 2>/dev/null
openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

install -m 0644 "$work/tls.crt" "$out/tls.crt"
install -m 0600 "$work/tls.key" "$out/tls.key"
install -m 0644 "$work/ca.crt" "$out/ca.crt"
bundle=$(base64 -w0 < "$work/ca.crt")
cat > "$out/cabundle.yaml" <<YAML
# Written by certs/generate.sh: the CA that signed the serving certificate, base64.
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: "${bundle}"
YAML
echo "generate.sh: wrote $out/{tls.crt,tls.key,ca.crt,cabundle.yaml} for ${service}.${namespace}.svc (valid ${days} days)"
