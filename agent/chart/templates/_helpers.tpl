{{/* The labels on every object; `app` differs on the repair binding. */}}
{{- define "istio-cni.labels" -}}
app: {{ .app }}
app.kubernetes.io/instance: istio-cni
app.kubernetes.io/managed-by: istio-cni-agent
app.kubernetes.io/name: istio-cni
app.kubernetes.io/part-of: istio
install.operator.istio.io/owning-resource: {{ .root.Values.ownerName | default "unknown" | quote }}
istio.io/rev: {{ .root.Values.revision | default "default" | quote }}
operator.istio.io/component: Cni
{{- end }}

{{/* The repair controller's mode, in the agent's precedence: repair > delete > label. */}}
{{- define "istio-cni.repairMode" -}}
{{- $r := .Values.repair -}}
{{- if not $r.enabled }}none{{ else if $r.repairPods }}repair{{ else if $r.deletePods }}delete{{ else if $r.labelPods }}label{{ else }}none{{ end -}}
{{- end }}

{{/* `image` verbatim when it has a slash, else hub/image:tag[-variant]. */}}
{{- define "istio-cni.image" -}}
{{- if contains "/" .Values.image -}}
{{ .Values.image }}
{{- else -}}
{{ .Values.hub | default "istio-cni-rs" }}/{{ .Values.image | default "agent" }}:{{ .Values.tag | default "dev" }}{{ if .Values.variant }}-{{ .Values.variant }}{{ end }}
{{- end -}}
{{- end }}

{{/* Whether the namespaced / cluster-scoped objects are rendered (global.resourceScope). */}}
{{- define "istio-cni.namespaced" -}}{{ if ne .Values.global.resourceScope "cluster" }}true{{ end }}{{- end }}
{{- define "istio-cni.clusterScoped" -}}{{ if ne .Values.global.resourceScope "namespace" }}true{{ end }}{{- end }}

{{/* Keys this chart does not render: refused rather than silently ignored. */}}
{{- define "istio-cni.refuseUnsupported" -}}
{{- $hint := "; render with `istio-cni-agent manifest`, which supports it" -}}
{{- if .Values.resourceQuotas.enabled }}{{ fail (print "resourceQuotas.enabled is not supported by this chart" $hint) }}{{ end -}}
{{- if .Values.global.networkPolicy.enabled }}{{ fail (print "global.networkPolicy.enabled is not supported by this chart" $hint) }}{{ end -}}
{{- if ne .Values.provider "default" }}{{ fail (print "provider " .Values.provider " is not supported by this chart" $hint) }}{{ end -}}
{{- if .Values.ambient.enabled }}{{ fail "ambient.enabled: this agent is the sidecar data plane's; ambient mode is not implemented" }}{{ end -}}
{{- if .Values.platform }}{{ fail (print "platform " .Values.platform " is not supported by this chart (set cniBinDir/cniConfDir)" $hint) }}{{ end -}}
{{- if .Values.seLinuxOptions }}{{ fail (print "seLinuxOptions is not supported by this chart" $hint) }}{{ end -}}
{{- if not (has .Values.global.resourceScope (list "all" "namespace" "cluster")) }}{{ fail (print "global.resourceScope " .Values.global.resourceScope ": expected all, namespace or cluster") }}{{ end -}}
{{- end }}
