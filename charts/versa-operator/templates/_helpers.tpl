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

{{/* The operator image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "versa-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The operator's flags: the Deployment's container and the `helm test` Pod
(which adds --check_installation) run with the same ones, so the check sees
the namespace, Lease and policy the operator uses.
*/}}
{{- define "versa-operator.args" -}}
- --metrics_address=0.0.0.0:{{ .Values.metrics.port }}
- --log_format={{ .Values.logFormat }}
- --leader_elect={{ .Values.leaderElection.enabled }}
- --lease_name={{ include "versa-operator.fullname" . }}
- --lease_duration_seconds={{ .Values.leaderElection.leaseDurationSeconds }}
- --progress_requeue_ms={{ .Values.rollout.progressRequeueMs }}
- --resync_seconds={{ .Values.rollout.resyncSeconds }}
- --sidecar_timeout_ms={{ .Values.rollout.sidecarTimeoutMs }}
- --network_policy={{ .Values.networkPolicy.enabled }}
- --allowed_volume_sources={{ join "," .Values.specPolicy.allowedVolumeSources }}
- --allow_secret_env={{ .Values.specPolicy.allowSecretEnv }}
- --allowed_image_prefixes={{ join "," .Values.specPolicy.allowedImagePrefixes }}
- --max_retry_backoff_seconds={{ .Values.specPolicy.maxRetryBackoffSeconds }}
- --operator_pod_labels=app.kubernetes.io/name=versa-operator,app.kubernetes.io/instance={{ .Release.Name }}
{{- with .Values.watchNamespace }}
- --namespace={{ . }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The operator container's environment. */}}
{{- define "versa-operator.env" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Whether a PodDisruptionBudget is rendered: `auto` means replicas > 1. */}}
{{- define "versa-operator.pdbEnabled" -}}
{{- $enabled := toString .Values.podDisruptionBudget.enabled -}}
{{- if or (eq $enabled "true") (and (eq $enabled "auto") (gt (int .Values.replicas) 1)) -}}
true
{{- end -}}
{{- end -}}

{{/* One scrape endpoint of a ServiceMonitor or PodMonitor, from serviceMonitor / podMonitor values. */}}
{{- define "versa-operator.scrapeEndpoint" -}}
path: /metrics
{{- with .interval }}
interval: {{ . }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
