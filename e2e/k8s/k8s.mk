# Kubernetes packaging and end-to-end targets; included from the top-level
# Makefile with:   include e2e/k8s/k8s.mk
# Everything heavy (Kubernetes, helm, kubeconform, sidecars, base images) is
# built once and cached below K8S_CACHE, keyed by version.
# (RBDCSI_CACHE, the scripts' own setting, is honoured too)
K8S_CACHE ?= $(or $(RBDCSI_CACHE),/var/cache/rbd-csi)
K8S_ENV   := RBDCSI_CACHE=$(K8S_CACHE)
K8S_DIR   := e2e/k8s

.PHONY: e2e e2e-down conformance k8s-tools k8s-images helm-lint kubeconform chart-check deploy-manifests check-deploy lab-up lab-down

## e2e: the whole Kubernetes e2e on this machine: packages, cached tool builds,
## chart checks, images, Ceph, a one-node cluster, the scenarios, teardown
e2e:
	$(K8S_ENV) bash $(K8S_DIR)/run.sh

## e2e-down: stop the lab and its Ceph that `LAB_KEEP=1 make e2e` (or
## E2E_KEEP=1) left running for a `make conformance` after it
e2e-down:
	$(K8S_ENV) bash $(K8S_DIR)/run.sh down

## k8s-tools: build (or find cached) Kubernetes, helm, kubeconform, sidecars
k8s-tools:
	$(K8S_ENV) bash $(K8S_DIR)/build-tools.sh

## k8s-images: the driver image (Dockerfile, via buildah) and the lab's images
k8s-images:
	$(K8S_ENV) bash $(K8S_DIR)/images.sh build

## helm-lint: helm lint --strict of charts/rbd-csi (defaults and ci/ values)
helm-lint:
	$(K8S_ENV) bash $(K8S_DIR)/chart-check.sh lint

## kubeconform: the rendered chart and what `rbd-csi setup` prints, validated
## against Kubernetes' own schemas
kubeconform:
	$(K8S_ENV) bash $(K8S_DIR)/chart-check.sh kubeconform
	$(K8S_ENV) bash $(K8S_DIR)/chart-check.sh setup

chart-check: helm-lint kubeconform check-deploy

## deploy-manifests: regenerate deploy/rbd-csi.yaml from the chart
deploy-manifests:
	$(K8S_ENV) bash $(K8S_DIR)/render-deploy.sh

## check-deploy: fail when deploy/ is out of sync with the chart
check-deploy:
	$(K8S_ENV) bash $(K8S_DIR)/render-deploy.sh --check

## lab-up / lab-down: only the one-node cluster (KUBECONFIG=/tmp/rbdcsi-k8s/admin.kubeconfig)
lab-up:
	$(K8S_ENV) bash $(K8S_DIR)/lab-up.sh

lab-down:
	$(K8S_ENV) bash $(K8S_DIR)/lab-down.sh

## conformance: Kubernetes' External Storage testsuites (e2e/k8s/conformance/
## driver.yaml) against the chart in the lab: brings the lab up (or reuses a
## running one), prints `N passed, N failed, N skipped`, keeps the JUnit report
## in $(K8S_CACHE)/last-conformance. CONFORMANCE_SUITES="volumeMode subPath"
## or CONFORMANCE_FOCUS=REGEX runs a part. Holds /tmp/rbdcsi-lab.lock.
conformance:
	$(K8S_ENV) bash $(K8S_DIR)/run.sh conformance
