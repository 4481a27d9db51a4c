{{/* The chart's name, shortened to fit a label. */}}
{{- define "otg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object's name. */}}
{{- define "otg.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "otg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "otg.labels" -}}
helm.sh/chart: {{ include "otg.chart" . }}
{{ include "otg.baseSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otg
{{- end }}

{{- define "otg.baseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "otg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The gateway pods, and only them (not the migration Job's). */}}
{{- define "otg.selectorLabels" -}}
{{ include "otg.baseSelectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "otg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "otg.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where the config file is mounted; the image's own default config lives there too. */}}
{{- define "otg.configDir" -}}/etc/otg{{- end }}

{{/*
The gateway's settings: the chart's own (address, store, data dir) and then
.Values.config. Helm reads every number of a values file as a float, which TOML would
write as 1024.0 and the gateway would refuse for an integer setting: integers are
written as integers.
*/}}
{{- define "otg.configToml" -}}
{{- $settings := dict "listen_addr" (printf "0.0.0.0:%d" (int .Values.containerPort)) "store" .Values.store "data_dir" "/data" }}
{{- $settings = merge $settings (deepCopy .Values.config) -}}
# otg-gateway settings, rendered by the Helm chart (docs/configuration.md).
{{- range $key, $value := $settings }}
{{ $key }} = {{ include "otg.tomlValue" $value }}
{{- end }}
{{- end }}

{{- define "otg.tomlValue" -}}
{{- if kindIs "string" . }}{{ quote . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}{{ int64 . }}
{{- else }}{{ fail (printf "config: %v is neither a string, a boolean nor an integer" .) }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token, or nothing when the gateway makes its own. */}}
{{- define "otg.secretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.adminToken }}
{{- include "otg.fullname" . }}
{{- end }}
{{- end }}

{{- define "otg.adminTokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretAdminTokenKey }}{{ else }}admin-token{{ end }}
{{- end }}

{{/* The Secret's data the chart manages; empty with existingSecret. */}}
{{- define "otg.secretData" -}}
{{- if not .Values.auth.existingSecret }}
{{- with .Values.auth.adminToken }}
admin-token: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The container's memory limit in MiB when written in Mi or Gi, else 0 (unknown). */}}
{{- define "otg.memoryLimitMib" -}}
{{- $limit := toString (dig "limits" "memory" "" .Values.resources) }}
{{- if hasSuffix "Gi" $limit }}{{ mul (trimSuffix "Gi" $limit | int) 1024 }}
{{- else if hasSuffix "Mi" $limit }}{{ trimSuffix "Mi" $limit | int }}
{{- else }}0
{{- end }}
{{- end }}

{{/*
The grace period: the preStop sleep, then the gateway's drain (shutdown_timeout_s), then
the store's flush and close.
*/}}
{{- define "otg.terminationGracePeriodSeconds" -}}
{{- $drain := add (int .Values.lifecycle.preStopSleepSeconds) (int (.Values.config.shutdown_timeout_s | default 30)) }}
{{- if kindIs "invalid" .Values.lifecycle.terminationGracePeriodSeconds }}
{{- add $drain 15 }}
{{- else if lt (int .Values.lifecycle.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds (%d) is shorter than preStopSleepSeconds + config.shutdown_timeout_s (%d): the gateway would be killed mid-drain" (int .Values.lifecycle.terminationGracePeriodSeconds) $drain) }}
{{- else }}
{{- int .Values.lifecycle.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Settings the chart refuses, with the reason. */}}
{{- define "otg.validate" -}}
{{- if eq .Values.store "embedded" }}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail (printf "store: embedded keeps its data on one pod's volume, so replicaCount must be 1 (it is %d). For more gateways use store: scylla" (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "store: embedded runs exactly one pod: autoscaling.enabled needs store: scylla" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.store "scylla") (not .Values.auth.existingSecret) (not .Values.auth.adminToken) }}
{{- fail "store: scylla needs the admin token every gateway shares: set auth.adminToken or auth.existingSecret" }}
{{- end }}
{{- $limit := include "otg.memoryLimitMib" . | int }}
{{- $cap := int (.Values.config.memory_limit_mib | default 1024) }}
{{- if and (gt $limit 0) (ge $cap $limit) }}
{{- fail (printf "config.memory_limit_mib (%d) must be below resources.limits.memory (%d MiB), or the gateway is OOM-killed before it refuses work" $cap $limit) }}
{{- end }}
{{- $_ := include "otg.terminationGracePeriodSeconds" . }}
{{- end }}
