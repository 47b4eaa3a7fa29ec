{{- define "buntime.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "buntime.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "buntime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buntime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "buntime.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "buntime.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* A value as the gateway reads it: numbers written bare in YAML arrive as floats. */}}
{{- define "buntime.text" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/* Whole seconds, rounded up, of a gateway duration: "30", "500ms", "30s", "1m", "1h", "1d". */}}
{{- define "buntime.seconds" -}}
{{- $v := include "buntime.text" . | trim -}}
{{- if not (regexMatch "^[0-9]+ *(ms|s|m|h|d)?$" $v) }}
{{- fail (printf "%q is not a duration (a number of seconds, or with ms, s, m, h or d)" $v) }}
{{- end }}
{{- $n := regexFind "^[0-9]+" $v | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+ *" $v "" }}
{{- if eq $unit "ms" }}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else if eq $unit "h" }}{{ mul $n 3600 }}
{{- else if eq $unit "d" }}{{ mul $n 86400 }}
{{- else }}{{ $n }}
{{- end }}
{{- end }}

{{/* A config value as text ("" when left empty or unset), or `default` when empty. */}}
{{- define "buntime.config" -}}
{{- $raw := index .root.Values.config .key -}}
{{- $v := "" -}}
{{- if not (kindIs "invalid" $raw) }}{{ $v = include "buntime.text" $raw }}{{ end -}}
{{- if eq $v "" }}{{ .default }}{{ else }}{{ $v }}{{ end }}
{{- end }}

{{- define "buntime.port" -}}
{{- include "buntime.config" (dict "root" . "key" "PORT" "default" "8000") }}
{{- end }}

{{- define "buntime.metricsPort" -}}
{{- include "buntime.config" (dict "root" . "key" "METRICS_PORT" "default" "") }}
{{- end }}

{{/* The runtime API's path as the gateway derives it: "" -> /api, "/_" or "_/" -> /_/api. */}}
{{- define "buntime.apiPath" -}}
{{- $prefix := include "buntime.config" (dict "root" . "key" "RUNTIME_API_PREFIX" "default" "") | trim | trimAll "/" }}
{{- if $prefix }}/{{ $prefix }}{{ end }}/api
{{- end }}

{{- define "buntime.localDatabase" -}}
{{- if eq (include "buntime.config" (dict "root" . "key" "DATABASE_LIBSQL_URL" "default" "")) "" }}true{{ end }}
{{- end }}

{{/* Whether the volume `name` is a claim (else an emptyDir): when enabled, and for the
database only while the local one is used. */}}
{{- define "buntime.claimed" -}}
{{- $p := index .root.Values.persistence .name }}
{{- if and $p.enabled (or (ne .name "data") (include "buntime.localDatabase" .root)) }}true{{ end }}
{{- end }}

{{- define "buntime.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "buntime.fullname" .) }}
{{- end }}

{{/* Whether the chart makes a Secret: some credential is set and no existing Secret is named. */}}
{{- define "buntime.ownSecret" -}}
{{- if not .Values.secrets.existingSecret }}
{{- range $k, $v := .Values.secrets }}
{{- if and (ne $k "existingSecret") $v }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Refuses values that would deploy a gateway that cannot work as asked. */}}
{{- define "buntime.validate" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: an image with the buntime binary on its PATH" }}
{{- end }}
{{- $several := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $several (include "buntime.localDatabase" .) }}
{{- fail "several replicas (replicaCount > 1 or autoscaling.enabled) need config.DATABASE_LIBSQL_URL: with the local database each replica keeps its own rules, and a rule written through one never reaches the others (charts/libsql runs a shared primary)" }}
{{- end }}
{{- $dataDir := include "buntime.config" (dict "root" . "key" "RUNTIME_DATA_DIR" "default" "") }}
{{- if and (include "buntime.localDatabase" .) (not (hasPrefix "/" $dataDir)) }}
{{- fail (printf "config.RUNTIME_DATA_DIR must be an absolute path while the local database is used (it is where its volume is mounted), not %q" $dataDir) }}
{{- end }}
{{- end }}
