{{- define "libsql.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "libsql.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role: primary or replica. */}}
{{- define "libsql.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "libsql.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "libsql.fullname" .)) }}
{{- end }}

{{- define "libsql.auth" -}}
{{- if or .Values.auth.jwtPublicKey .Values.auth.existingSecret }}true{{ end }}
{{- end }}

{{/* The primary's gRPC address, which replicas follow: its pod's stable name. */}}
{{- define "libsql.primaryGrpc" -}}
http://{{ include "libsql.fullname" . }}-0.{{ include "libsql.fullname" . }}:{{ .Values.ports.grpc }}
{{- end }}

{{- define "libsql.validate" -}}
{{- if and (not (include "libsql.auth" .)) (not .Values.auth.allowUnauthenticated) }}
{{- fail "auth.jwtPublicKey (or auth.existingSecret) is required: without it anyone who reaches the Service can read and write the database. Set auth.allowUnauthenticated=true to run without auth anyway" }}
{{- end }}
{{- if and .Values.auth.jwtPublicKey (not (contains "-----BEGIN PUBLIC KEY-----" .Values.auth.jwtPublicKey)) }}
{{- fail "auth.jwtPublicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----), the Ed25519 key clients' JWTs are signed for" }}
{{- end }}
{{- end }}
