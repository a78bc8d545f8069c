{{/* Names and labels. */}}
{{- define "pixmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pixmesh.fullname" -}}
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

{{- define "pixmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pixmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pixmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pixmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pixmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pixmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest. Arguments: (list IMAGE DEFAULT_TAG). */}}
{{- define "pixmesh.imageRef" -}}
{{- $image := index . 0 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) }}
{{- end }}
{{- end }}

{{- define "pixmesh.image" -}}
{{- include "pixmesh.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{/* Envoy's --concurrency: the workers figure (2 when the sidecar reads its cgroup). */}}
{{- define "pixmesh.envoyConcurrency" -}}
{{- if gt (int .Values.workers) 0 }}{{ int .Values.workers }}{{ else }}2{{ end }}
{{- end }}

{{/* The sidecar's gRPC listen address: loopback beside Envoy, all interfaces as a service. */}}
{{- define "pixmesh.sidecarListen" -}}
{{- if eq .Values.topology "mesh" }}0.0.0.0:{{ .Values.sidecar.port }}{{ else }}127.0.0.1:{{ .Values.sidecar.port }}{{ end }}
{{- end }}

{{/* The sidecar's configuration: sidecarConfig with listen and limits.workers set. */}}
{{- define "pixmesh.sidecarConfig" -}}
{{- $config := deepCopy .Values.sidecarConfig }}
{{- $_ := set $config "listen" (include "pixmesh.sidecarListen" .) }}
{{- $_ := set $config "metrics_listen" (printf "0.0.0.0:%v" .Values.metrics.port) }}
{{- $limits := default dict $config.limits }}
{{- if gt (int .Values.workers) 0 }}
{{- $_ := set $limits "workers" (int .Values.workers) }}
{{- end }}
{{- $_ := set $config "limits" $limits }}
{{- include "pixmesh.toml" (dict "table" $config "path" "") }}
{{- end }}

{{/*
A map as TOML: Helm's toToml writes YAML integers as floats (1.34217728e+08), which the
sidecar refuses, so this writes them itself. Scalars and lists of scalars first, then the
sub-tables as [path.name]. Arguments: (dict "table" MAP "path" "a.b").
*/}}
{{- define "pixmesh.toml" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if not (kindIs "map" $value) }}
{{ include "pixmesh.tomlKey" $key }} = {{ include "pixmesh.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if kindIs "map" $value }}
{{- $sub := ternary (include "pixmesh.tomlKey" $key) (printf "%s.%s" $path (include "pixmesh.tomlKey" $key)) (eq $path "") }}
{{- $scalars := false }}
{{- range $v := values $value }}{{ if not (kindIs "map" $v) }}{{ $scalars = true }}{{ end }}{{ end }}
{{- if or $scalars (eq (len $value) 0) }}

[{{ $sub }}]
{{- end }}
{{- include "pixmesh.toml" (dict "table" $value "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pixmesh.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "pixmesh.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "pixmesh.tomlValue" $v }}{{ end }}]
{{- else if kindIs "invalid" . }}{{ fail "sidecarConfig: null values have no TOML form; leave the key out" }}
{{- else }}{{ fail (printf "sidecarConfig: %v has no TOML form here" .) }}
{{- end }}
{{- end }}

{{/* The filter's configuration as JSON; in the mesh topology with `call` set. */}}
{{- define "pixmesh.filterConfig" -}}
{{- $config := deepCopy .Values.filterConfig }}
{{- if eq .Values.topology "mesh" }}
{{- $call := deepCopy .Values.mesh.call }}
{{- $_ := set $call "cluster" (include "pixmesh.meshCluster" .) }}
{{- /* The call's :authority: neither mesh's cluster name is a valid one (HTTP/2 refuses it). */}}
{{- $_ := set $call "authority" (printf "%s.%s.svc.cluster.local:%v" (include "pixmesh.fullname" .) .Release.Namespace .Values.sidecar.port) }}
{{- $_ := set $config "call" $call }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/* The sidecar's cluster in the mesh's Envoys. */}}
{{- define "pixmesh.meshCluster" -}}
{{- if .Values.mesh.istio.enabled }}
{{- printf "outbound|%v||%s.%s.svc.cluster.local" .Values.sidecar.port (include "pixmesh.fullname" .) .Release.Namespace }}
{{- else if .Values.mesh.envoyGateway.enabled }}
{{- printf "httproute/%s/%s/rule/0" .Release.Namespace (include "pixmesh.fullname" .) }}
{{- else }}
{{- fail "topology mesh: enable mesh.istio or mesh.envoyGateway" }}
{{- end }}
{{- end }}

{{/* Environment variables the filter reads: the render key and secrets.filterEnv. */}}
{{- define "pixmesh.filterEnv" -}}
- name: PIXMESH_RENDER_KEY
  valueFrom:
    secretKeyRef: { name: {{ .Values.secrets.renderKey.name | quote }}, key: {{ .Values.secrets.renderKey.key | quote }} }
{{- range .Values.secrets.filterEnv }}
- name: {{ .name | quote }}
  valueFrom:
    secretKeyRef: { name: {{ .secretName | quote }}, key: {{ .key | quote }} }
{{- end }}
{{- end }}

{{/* The names of the filter's environment variables. */}}
{{- define "pixmesh.filterEnvNames" -}}
{{- $names := list "PIXMESH_RENDER_KEY" }}
{{- range .Values.secrets.filterEnv }}{{ $names = append $names .name }}{{ end }}
{{- toJson $names }}
{{- end }}

{{/* "true" when a ServiceMonitor or PodMonitor scrapes the sidecar's metrics port. */}}
{{- define "pixmesh.metricsEnabled" -}}
{{- if or .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}true{{ end }}
{{- end }}
