{{/* Name of the release's objects. */}}
{{- define "versa-operator.fullname" -}}
{{- if contains "versa-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-versa-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the operator Pods (also used by the NetworkPolicy the operator writes). */}}
{{- define "versa-operator.selectorLabels" -}}
app.kubernetes.io/name: versa-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "versa-operator.labels" -}}
{{ include "versa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "versa-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "versa-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
