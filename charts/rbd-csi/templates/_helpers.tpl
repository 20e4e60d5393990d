{{/* Chart name, at most 63 characters. */}}
{{- define "rbd-csi.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Base name of the objects: the release name, prefixed with the chart name
unless the release name already holds it. At most 52 characters, leaving room
for suffixes such as -controller.
*/}}
{{- define "rbd-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rbd-csi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "rbd-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rbd-csi.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Standard labels; call with (dict "ctx" $ "component" "node") or component "". */}}
{{- define "rbd-csi.labels" -}}
helm.sh/chart: {{ include "rbd-csi.chart" .ctx }}
{{ include "rbd-csi.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: rbd-csi
{{- end -}}

{{/* repository:tag of an image entry; call with (dict "ctx" $ "image" .Values.images.driver). */}}
{{- define "rbd-csi.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "rbd-csi.controllerServiceAccount" -}}
{{- if .Values.serviceAccounts.controller.create -}}
{{- default (printf "%s-controller" (include "rbd-csi.fullname" .)) .Values.serviceAccounts.controller.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccounts.controller.name -}}
{{- end -}}
{{- end -}}

{{- define "rbd-csi.nodeServiceAccount" -}}
{{- if .Values.serviceAccounts.node.create -}}
{{- default (printf "%s-node" (include "rbd-csi.fullname" .)) .Values.serviceAccounts.node.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccounts.node.name -}}
{{- end -}}
{{- end -}}

{{- define "rbd-csi.configMapName" -}}
{{- printf "%s-config" (include "rbd-csi.fullname" .) -}}
{{- end -}}

{{- define "rbd-csi.listingSecretName" -}}
{{- default (printf "%s-listing" (include "rbd-csi.fullname" .)) .Values.controller.listingCredentials.existingSecret -}}
{{- end -}}

{{/*
The listing credentials derived from the StorageClasses, as JSON
{"<clusterID>": "<Secret name>"}: without explicit
controller.listingCredentials, each cluster's are those of the first
enabled StorageClass naming it with a secretRef in the release's namespace
(its userID and userKey keys), so that a restarted controller answers
ListVolumes and GetCapacity at once and can publish volumes whose
StorageClass names no controller-publish Secret. Empty with explicit ones.
*/}}
{{- define "rbd-csi.derivedListing" -}}
{{- $l := .Values.controller.listingCredentials -}}
{{- $derived := dict -}}
{{- if not (or $l.existingSecret $l.clusters) -}}
{{- range .Values.storageClasses -}}
{{- $cid := get (get . "parameters" | default dict) "clusterID" -}}
{{- $ref := get . "secretRef" -}}
{{- if and (or (not (hasKey . "enabled")) .enabled) $cid $ref (eq (get $ref "namespace" | default $.Release.Namespace) $.Release.Namespace) (not (hasKey $derived $cid)) -}}
{{- $_ := set $derived $cid $ref.name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $derived -}}
{{- end -}}

{{/*
"true" when the controller has listing credentials, given or derived
(what mounts --secrets-dir, and what the NOTES' warning looks at).
*/}}
{{- define "rbd-csi.hasListingCredentials" -}}
{{- $l := .Values.controller.listingCredentials -}}
{{- if or $l.existingSecret $l.clusters (include "rbd-csi.derivedListing" . | fromJson) -}}true{{- end -}}
{{- end -}}

{{- define "rbd-csi.reattachSecretName" -}}
{{- default (printf "%s-reattach" (include "rbd-csi.fullname" .)) .Values.node.reattachCredentials.existingSecret -}}
{{- end -}}

{{/*
The items of a credentials Secret volume: "<clusterID>.userID" and
"<clusterID>.userKey" become <clusterID>/userID and userKey, the layout of
the driver's --secrets-dir; for every configured cluster with an existing
Secret, for the listed ones otherwise. (dict "creds" .existingSecret/.clusters "ctx" $)
*/}}
{{- define "rbd-csi.credentialItems" -}}
{{- $ids := list }}
{{- if .creds.existingSecret }}
{{- range .ctx.Values.clusters }}{{ $ids = append $ids .clusterID }}{{ end }}
{{- else }}
{{- $ids = keys .creds.clusters | sortAlpha }}
{{- end }}
{{- range $ids }}
- key: {{ . }}.userID
  path: {{ . }}/userID
- key: {{ . }}.userKey
  path: {{ . }}/userKey
{{- end }}
{{- end -}}

{{/* A credentials Secret from .creds.clusters: "<clusterID>.userID/.userKey". */}}
{{- define "rbd-csi.credentialData" -}}
{{- range $id, $cred := .clusters }}
{{ $id }}.userID: {{ $cred.userID | quote }}
{{ $id }}.userKey: {{ $cred.userKey | quote }}
{{- end }}
{{- end -}}

{{/* The driver's socket as the kubelet sees it. */}}
{{- define "rbd-csi.kubeletSocket" -}}
{{- printf "%s/plugins/%s/csi.sock" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* Whole seconds of a Go duration made of h, m and s parts ("1m30s" -> 90). */}}
{{- define "rbd-csi.seconds" -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+[hms]" . -1 -}}
{{- $n := trimSuffix "h" (trimSuffix "m" (trimSuffix "s" .)) | atoi -}}
{{- if hasSuffix "h" . -}}{{- $total = add $total (mul $n 3600) -}}
{{- else if hasSuffix "m" . -}}{{- $total = add $total (mul $n 60) -}}
{{- else -}}{{- $total = add $total $n -}}{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* Checks across values that the schema cannot express. */}}
{{- define "rbd-csi.validate" -}}
{{- $ceph := include "rbd-csi.seconds" .Values.cephTimeout | atoi -}}
{{- $sidecar := include "rbd-csi.seconds" .Values.sidecarTimeout | atoi -}}
{{- if le $sidecar $ceph -}}
{{- fail (printf "sidecarTimeout (%s) must be longer than cephTimeout (%s): a CSI call may run several Ceph operations" .Values.sidecarTimeout .Values.cephTimeout) -}}
{{- end -}}
{{- if and .Values.controller.enabled .Values.node.enabled .Values.controller.hostNetwork .Values.node.hostNetwork .Values.controller.livenessProbe.enabled .Values.node.livenessProbe.enabled (eq (int .Values.controller.livenessProbe.port) (int .Values.node.livenessProbe.port)) -}}
{{- fail "controller.livenessProbe.port and node.livenessProbe.port must differ when both pods use the host network" -}}
{{- end -}}
{{- with .Values.metrics -}}
{{- if and .enabled $.Values.controller.enabled $.Values.node.enabled $.Values.controller.hostNetwork $.Values.node.hostNetwork (eq (int .port) (int .nodePort)) -}}
{{- fail "metrics.port and metrics.nodePort must differ when both pods use the host network" -}}
{{- end -}}
{{- if and .enabled $.Values.controller.livenessProbe.enabled (eq (int .port) (int $.Values.controller.livenessProbe.port)) -}}
{{- fail "metrics.port and controller.livenessProbe.port must differ" -}}
{{- end -}}
{{- if and .enabled $.Values.node.livenessProbe.enabled (eq (int .nodePort) (int $.Values.node.livenessProbe.port)) -}}
{{- fail "metrics.nodePort and node.livenessProbe.port must differ" -}}
{{- end -}}
{{- if and .serviceMonitor.enabled (not .enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- end -}}
{{- range .Values.volumeSnapshotClasses -}}
{{- if and (or (not (hasKey . "enabled")) .enabled) (not $.Values.controller.snapshotter.enabled) -}}
{{- fail (printf "volumeSnapshotClasses[%s] needs controller.snapshotter.enabled: without csi-snapshotter its snapshots would never be taken" .name) -}}
{{- end -}}
{{- end -}}
{{- $ids := dict -}}
{{- range .Values.clusters -}}
{{- if hasKey $ids .clusterID -}}
{{- fail (printf "clusters: clusterID %q is listed twice" .clusterID) -}}
{{- end -}}
{{- $_ := set $ids .clusterID true -}}
{{- end -}}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT overrides for clients of the API server. */}}
{{- define "rbd-csi.kubernetesAPIEnv" -}}
{{- with .Values.kubernetesAPI.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetesAPI.port }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Driver flags shared by the controller and the node plugin. */}}
{{- define "rbd-csi.driverCommonArgs" -}}
- --endpoint=unix:///csi/csi.sock
- --drivername={{ .Values.driverName }}
- --cluster-config=/etc/rbd-csi/config/config.json
- --instance-id={{ .Values.instanceID }}
- --ceph-timeout={{ .Values.cephTimeout }}
{{- with .Values.cephIdleTimeout }}
- --ceph-idle-timeout={{ . }}
{{- end }}
- -v={{ .Values.logLevel }}
{{- end -}}

{{/* The API credentials of the controller's sidecars (volume api-token). */}}
{{- define "rbd-csi.apiTokenMount" -}}
- name: api-token
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end -}}

{{/*
The address /healthz listens on, from a component's values (dict "c"
controller-or-node values). With hostNetwork the pod shares the node's
addresses, so by default it listens on the node's loopback only, which is
where the kubelet's probe goes; without hostNetwork, on the pod's addresses.
*/}}
{{- define "rbd-csi.livenessBind" -}}
{{- .c.livenessProbe.bindAddress | default (ternary "127.0.0.1" "" .c.hostNetwork) -}}
{{- end -}}

{{/*
The address the node plugin's metrics listen on (metrics.nodeBindAddress).
With hostNetwork the pod shares every node address, so by default only the
node's loopback: the metrics are unauthenticated. "hostIP" is the node's
primary address (status.hostIP, env HOST_IP), where the Service's endpoints
and a ServiceMonitor scrape; without hostNetwork, the pod's addresses.
*/}}
{{- define "rbd-csi.nodeMetricsBind" -}}
{{- $a := .Values.metrics.nodeBindAddress | default (ternary "127.0.0.1" "" .Values.node.hostNetwork) -}}
{{- eq $a "hostIP" | ternary "$(HOST_IP)" $a -}}
{{- end -}}
