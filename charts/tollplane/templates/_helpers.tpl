{{/* Name of the chart (object names are prefixed with the full name below). */}}
{{- define "tollplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-chart, or just the release name when it already contains the chart name. */}}
{{- define "tollplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tollplane.operatorName" -}}
{{- printf "%s-operator" (include "tollplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollplane.gateName" -}}
{{- printf "%s-gate" (include "tollplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "tollplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tollplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (operator or gate): stable across upgrades. */}}
{{- define "tollplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollplane.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tollplane.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The Pod Security Standards "restricted" profile: non-root (the image's 65532), no privilege
escalation, no capabilities, RuntimeDefault seccomp, read-only root filesystem. Not
configurable on purpose: nothing in Tollplane needs more.
*/}}
{{- define "tollplane.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tollplane.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* NAMESPACE/NAME:PORT of the gate Service, the backend of every route the operator writes. */}}
{{- define "tollplane.gateService" -}}
{{- printf "%s/%s:%d" .Release.Namespace (include "tollplane.gateName" .) (int .Values.gate.service.port) -}}
{{- end -}}

{{/* NAMESPACE/NAME[/SECTION] of the Gateway the HTTPRoutes attach to. */}}
{{- define "tollplane.gatewayRef" -}}
{{- $gw := .Values.route.gateway -}}
{{- $ref := printf "%s/%s" (default .Release.Namespace $gw.namespace) $gw.name -}}
{{- if $gw.sectionName -}}
{{- $ref = printf "%s/%s" $ref $gw.sectionName -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "tollplane.peeringName" -}}
{{- default (include "tollplane.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/* Fail early, with the value to set, instead of deploying something that cannot work. */}}
{{- define "tollplane.validate" -}}
{{- if and (eq .Values.route.kind "HTTPRoute") (not .Values.route.gateway.name) -}}
{{- fail "route.kind=HTTPRoute needs route.gateway.name (and route.gateway.namespace): the Gateway the HTTPRoutes attach to" -}}
{{- end -}}
{{- $many := or .Values.gate.autoscaling.enabled (gt (int .Values.gate.replicas) 1) -}}
{{- if and $many (not .Values.gate.redis.existingSecret) (not .Values.gate.allowPerReplicaCounters) -}}
{{- fail "more than one gate replica needs shared counters: set gate.redis.existingSecret (a Secret with the Redis URL), or gate.allowPerReplicaCounters=true to accept per-replica limits" -}}
{{- end -}}
{{- if and (eq .Values.gate.mode "forward-auth") (eq .Values.route.kind "None") -}}
{{- fail "gate.mode=forward-auth needs a route.kind (Ingress with controller nginx) whose controller calls the gate" -}}
{{- end -}}
{{- end -}}
