{{- define "kompress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kompress.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "kompress.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "kompress.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kompress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kompress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kompress.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kompress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kompress
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kompress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kompress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest pins the image, else repository:tag (tag defaults to appVersion). */}}
{{- define "kompress.image" -}}
{{- $repository := .image.repository }}
{{- with (.global | default dict).imageRegistry }}
{{- /* global.imageRegistry replaces the registry host (a first segment with '.' or ':', or localhost) */}}
{{- $parts := splitList "/" $repository }}
{{- $first := first $parts }}
{{- if or (contains "." $first) (contains ":" $first) (eq $first "localhost") }}
{{- $repository = join "/" (rest $parts) }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Pull secrets: the chart's own and Helm's global ones (an umbrella chart's), as names. */}}
{{- define "kompress.pullSecrets" -}}
{{- $names := list }}
{{- range (concat .Values.imagePullSecrets ((.Values.global | default dict).imagePullSecrets | default list)) }}
{{- if kindIs "string" . }}
{{- $names = append $names . }}
{{- else }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- uniq $names | join "," }}
{{- end }}

{{/* Kopf peering: on when more than one replica runs. */}}
{{- define "kompress.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}{{ include "kompress.fullname" . }}{{ end }}
{{- end }}

{{/* The metrics Service's name, which is also Prometheus' `job` label under a ServiceMonitor. */}}
{{- define "kompress.metricsService" -}}
{{- printf "%s-metrics" (include "kompress.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The admission webhook's Service, TLS Secret and the DNS name the API server checks its certificate against. */}}
{{- define "kompress.webhookService" -}}
{{- printf "%s-webhook" (include "kompress.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "kompress.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "kompress.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "kompress.webhookHost" -}}
{{- printf "%s.%s.svc" (include "kompress.webhookService" .) .Release.Namespace }}
{{- end }}
