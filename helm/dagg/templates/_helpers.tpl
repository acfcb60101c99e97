{{/*
Names. The fullname is kept short (40 characters): pods are `<fullname>-N`, the peers'
headless Service is `<fullname>-peers`, and the StatefulSet controller adds a revision hash to
the name in a label that must stay within 63 characters.
*/}}
{{- define "dagg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "dagg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dagg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dagg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dagg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dagg.labels" -}}
helm.sh/chart: {{ include "dagg.chart" . }}
{{ include "dagg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dagg
{{- end -}}

{{- define "dagg.peersService" -}}
{{- printf "%s-peers" (include "dagg.fullname" .) -}}
{{- end -}}

{{- define "dagg.secretName" -}}
{{- default (printf "%s-secrets" (include "dagg.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "dagg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dagg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dagg.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The stable DNS name of pod N's peer port: `<fullname>-N.<fullname>-peers.<ns>.svc.<domain>:<port>`.
*/}}
{{- define "dagg.peerHost" -}}
{{- $ctx := index . 0 -}}
{{- $i := index . 1 -}}
{{- printf "%s:%d" (include "dagg.peerHostName" (list $ctx $i)) (int $ctx.Values.ports.peer) -}}
{{- end -}}

{{/*
Pod N's stable DNS name without the port: the host its node certificate names (SAN).
*/}}
{{- define "dagg.peerHostName" -}}
{{- $ctx := index . 0 -}}
{{- $i := index . 1 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "dagg.fullname" $ctx) (int $i) (include "dagg.peersService" $ctx) $ctx.Release.Namespace $ctx.Values.clusterDomain -}}
{{- end -}}

{{/*
The Secret mounted at peerTLS.mountPath (generate and existingSecret): `ca.crt` and
`<pod>.crt` / `<pod>.key` per pod.
*/}}
{{- define "dagg.peerTLSSecret" -}}
{{- if eq .Values.peerTLS.source "existingSecret" -}}
{{- .Values.peerTLS.existingSecret -}}
{{- else -}}
{{- printf "%s-peer-tls" (include "dagg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* cert-manager: the Certificate (and its Secret) of pod N. */}}
{{- define "dagg.peerCertificate" -}}
{{- $ctx := index . 0 -}}
{{- $i := index . 1 -}}
{{- printf "%s-%d-peer" (include "dagg.fullname" $ctx) (int $i) -}}
{{- end -}}

{{- define "dagg.apiTLSSecret" -}}
{{- default (printf "%s-api-tls" (include "dagg.fullname" .)) .Values.api.tls.existingSecret -}}
{{- end -}}

{{- define "dagg.apiScheme" -}}
{{- if .Values.api.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/*
The static bootstrap list for `--peers` (DAGG_PEERS): `1=<pod 0>,2=<pod 1>,...`, one entry per
replica; the node id of pod N is N+1.
*/}}
{{- define "dagg.peers" -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $peers = append $peers (printf "%d=%s" (add1 $i) (include "dagg.peerHost" (list $ $i))) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{/* A Raft majority of the replicas. */}}
{{- define "dagg.quorum" -}}
{{- add1 (div (int .Values.replicas) 2) -}}
{{- end -}}

{{- define "dagg.listen" -}}
{{- $host := index . 0 -}}
{{- $port := index . 1 -}}
{{- if contains ":" $host -}}
{{- printf "[%s]:%d" $host (int $port) -}}
{{- else -}}
{{- printf "%s:%d" $host (int $port) -}}
{{- end -}}
{{- end -}}

{{- define "dagg.sharedClaim" -}}
{{- default (printf "%s-shared" (include "dagg.fullname" .)) .Values.sharedStorage.existingClaim -}}
{{- end -}}
