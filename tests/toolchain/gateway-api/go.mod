// Pin of the Gateway API release whose standard-channel CRDs the tests install. Nothing is
// built from it: controlplane.py only runs `go mod download` here, so go.sum verifies the
// download. Do not run `go mod tidy` (with no imports it would drop the requirement).
module tollplane.io/toolchain/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
