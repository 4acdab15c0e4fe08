{{- define "mesh.labels" -}}
app.kubernetes.io/part-of: mesh
{{- end -}}

{{- define "mesh.caBundle" -}}
{{- required "identity.trustAnchorsPEM is required: the trust anchors, PEM" .Values.identity.trustAnchorsPEM | b64enc -}}
{{- end -}}

{{- define "mesh.clientConfig" -}}
clientConfig:
  service:
    name: mesh-controller
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  caBundle: {{ include "mesh.caBundle" .root }}
sideEffects: None
admissionReviewVersions: ["v1"]
failurePolicy: {{ .root.Values.webhook.failurePolicy }}
timeoutSeconds: {{ .root.Values.webhook.timeoutSeconds }}
{{- end -}}
