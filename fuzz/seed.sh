#!/usr/bin/env bash
# Seed the fuzz corpora from the acceptance cases (tests/cases), the examples and the
# regression inputs (tests/regressions), so libFuzzer starts from realistic requests.
#
#   fuzz/seed.sh            # writes fuzz/corpus/<target>/ (existing files are kept)
#
# Needs jq. Seeds are named by the SHA-1 of their content, as libFuzzer names its own finds, so
# re-running adds nothing twice.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
corpus="$here/corpus"
mkdir -p "$corpus"/{hook_request,prefetch_facts,jwt,fhir_response,fhir_shapes}

# put TARGET < bytes: store stdin as one seed.
put() {
    local tmp
    tmp=$(mktemp)
    cat > "$tmp"
    mv "$tmp" "$corpus/$1/$(sha1sum < "$tmp" | cut -c1-40)"
}

# The service a hook goes to: the first byte of a hook_request input picks the service by its
# index in the discovery document (fhir-profiles/cds-services.json).
selector() {
    jq -r --arg hook "$1" \
        '[.services[].hook] | index($hook) // 0' "$root/fhir-profiles/cds-services.json"
}

requests=()
for f in "$root"/tests/cases/*.json; do
    requests+=("$(jq -c '.request' "$f")")
done
for f in "$root"/examples/*.json "$root"/examples/demo/*-demo-*.json; do
    requests+=("$(jq -c '.' "$f")")
done

for r in "${requests[@]}"; do
    hook=$(jq -r '.hook // "order-sign"' <<< "$r")
    # hook_request: selector byte, then the body.
    { printf "\\x$(printf %02x "$(selector "$hook")")"; printf '%s' "$r"; } | put hook_request
    # prefetch_facts: the request as it is (context + prefetch).
    printf '%s' "$r" | put prefetch_facts
    # fhir_response: each prefetch value, as a FHIR server would have answered it.
    jq -c '.prefetch // {} | .[] | select(. != null)' <<< "$r" | while IFS= read -r v; do
        printf '%s' "$v" | put fhir_response
    done
done

# A few shapes the cases do not have.
printf 'null' | put fhir_response
printf '{"resourceType":"OperationOutcome","issue":[]}' | put fhir_response
printf '{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"Observation?page=2"}],"entry":[]}' \
    | put fhir_response

# jwt: mode byte, then header \n claims \n signature (see fuzz_targets/jwt.rs).
header='{"alg":"ES384","typ":"JWT","kid":"fuzz-es384"}'
claims='{"iss":"https://ehr.example.org","aud":"https://cds.example.org/cds-services/iort-coverage","exp":4102444800,"iat":1700000000,"jti":"seed-1","sub":"client","tenant":"t1"}'
for mode in 1 2 3; do
    { printf "\\x0$mode"; printf '%s\n%s\n%s' "$header" "$claims" 'not-a-signature'; } | put jwt
done
printf '\x00Bearer eyJhbGciOiJFUzM4NCIsImtpZCI6ImsifQ.eyJpc3MiOiJ4In0.c2ln' | put jwt
printf '\x00Basic dXNlcjpwdw==' | put jwt
printf '\x01{"alg":"none","kid":"k"}\n{}\n' | put jwt
printf '\x01{"alg":"HS256","kid":"k"}\n{}\nx' | put jwt
printf '\x02{"alg":"ES384","kid":"fuzz-es384","jku":"https://evil.example/jwks"}\n%s\nx' "$claims" | put jwt

# fhir_shapes: its bytes are choices (fuzz/src/structured.rs); the first byte picks the case
# (in file-name order), the rest mutations. One seed per case, unmutated, then a few mutated.
n_cases=$(find "$root/tests/cases" -name '*.json' | wc -l)
for i in $(seq 0 $((n_cases > 256 ? 255 : n_cases - 1))); do
    printf "\\x$(printf %02x "$i")" | put fhir_shapes
done
for i in 0 1 2 3; do
    printf "\\x$(printf %02x "$i")\\x07\\x80\\x10\\x00\\x85\\x20\\x00\\x82\\x30\\x01" | put fhir_shapes
done

# Regression inputs, each to the target named by its folder (tests/regressions/<target>/...).
if [ -d "$root/tests/regressions" ]; then
    for target in hook_request prefetch_facts jwt fhir_response fhir_shapes; do
        [ -d "$root/tests/regressions/$target" ] || continue
        for f in "$root/tests/regressions/$target"/*; do
            [ -f "$f" ] && put "$target" < "$f"
        done
    done
fi

for t in hook_request prefetch_facts jwt fhir_response fhir_shapes; do
    echo "$t: $(find "$corpus/$t" -type f | wc -l) seeds"
done
