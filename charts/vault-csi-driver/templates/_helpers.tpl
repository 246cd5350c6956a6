{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "vault-csi-driver.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name for the namespaced objects. */}}
{{- define "vault-csi-driver.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "vault-csi-driver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vault-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vault-csi-driver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vault-csi-driver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vault-csi-driver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vault-csi-driver.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vault-csi-driver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the CSI socket lives on the node (kubelet talks to it there). */}}
{{- define "vault-csi-driver.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName }}
{{- end }}

{{/* The CA bundle ConfigMap's name, or "" when Vault needs none. */}}
{{- define "vault-csi-driver.caConfigMap" -}}
{{- if .Values.vault.caBundle.pem }}
{{- printf "%s-vault-ca" (include "vault-csi-driver.fullname" .) }}
{{- else if .Values.vault.caBundle.configMap }}
{{- .Values.vault.caBundle.configMap }}
{{- end }}
{{- end }}

{{/* The access policy as YAML text, or "" when there is none. */}}
{{- define "vault-csi-driver.accessPolicy" -}}
{{- $p := .Values.accessPolicy }}
{{- if kindIs "string" $p }}
{{- $p }}
{{- else if $p }}
{{- toYaml $p }}
{{- end }}
{{- end }}

{{/* CSIDriver serviceAccountTokenInSecrets: the value, or on for clusters 1.35+. */}}
{{- define "vault-csi-driver.tokenInSecrets" -}}
{{- if kindIs "bool" .Values.serviceAccountTokenInSecrets }}
{{- .Values.serviceAccountTokenInSecrets }}
{{- else }}
{{- semverCompare ">=1.35.0-0" .Capabilities.KubeVersion.Version }}
{{- end }}
{{- end }}
