{{/* Names ------------------------------------------------------------------------- */}}

{{- define "modelops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "modelops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount of Job pods ("" = the namespace's default; its token is never mounted). */}}
{{- define "modelops.jobServiceAccountName" -}}
{{- if .Values.jobs.serviceAccount.create -}}
{{- default (printf "%s-job" (include "modelops.fullname" .)) .Values.jobs.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Values.jobs.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------- */}}

{{- define "modelops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object of the chart. Never `app.kubernetes.io/managed-by: modelops`: that
     value marks the Jobs the operator creates (the PodMonitor and the operator's Job
     watch select on it). */}}
{{- define "modelops.labels" -}}
helm.sh/chart: {{ include "modelops.chart" . }}
{{ include "modelops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelops
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ServiceMonitor / PodMonitor / PrometheusRule: kube-prometheus-stack selects only the
     ones that carry its release label, given in monitoring.labels. */}}
{{- define "modelops.monitoringLabels" -}}
{{ include "modelops.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Mode ---------------------------------------------------------------------------- */}}

{{/* "true" when the operator watches listed namespaces only (Roles there, no ClusterRoles). */}}
{{- define "modelops.namespaced" -}}
{{- if .Values.watch.namespaces -}}true{{- end -}}
{{- end -}}

{{/* Images -------------------------------------------------------------------------- */}}

{{- define "modelops.imageRef" -}}
{{- $tag := default .chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "modelops.image" -}}
{{- include "modelops.imageRef" (dict "image" .Values.image "chart" .Chart) -}}
{{- end -}}

{{- define "modelops.jobsImage" -}}
{{- include "modelops.imageRef" (dict "image" .Values.jobs.image "chart" .Chart) -}}
{{- end -}}

{{/* Cross-field checks the JSON schema cannot say clearly ------------------------------ */}}

{{- define "modelops.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail (printf "replicaCount=%d needs peering.enabled=true: without kopf peering every replica would reconcile and create Jobs" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.jobs.serviceAccount.create (not .Values.watch.namespaces) -}}
{{- fail "jobs.serviceAccount.create=true needs watch.namespaces: the chart can create the Job ServiceAccount only in namespaces it knows (cluster-wide, set jobs.serviceAccount.name to an account present in every namespace, or leave it empty)" -}}
{{- end -}}
{{- if and (not .Values.rbac.create) (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.name is required when serviceAccount.create=false" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled=true needs service.enabled=true: the ServiceMonitor scrapes the operator through its Service" -}}
{{- end -}}
{{- if and .Values.registry.mlflow.tokenSecret.name (not .Values.registry.mlflow.url) -}}
{{- fail "registry.mlflow.tokenSecret.name needs registry.mlflow.url: a token without a server would never be used" -}}
{{- end -}}
{{- if and .Values.registry.mlflow.basicAuthSecret.name (not .Values.registry.mlflow.url) -}}
{{- fail "registry.mlflow.basicAuthSecret.name needs registry.mlflow.url: credentials without a server would never be used" -}}
{{- end -}}
{{- if and .Values.registry.mlflow.basicAuthSecret.name .Values.registry.mlflow.tokenSecret.name -}}
{{- fail "registry.mlflow.basicAuthSecret.name and registry.mlflow.tokenSecret.name are exclusive: a request carries one Authorization header (set one)" -}}
{{- end -}}
{{- if and .Values.registry.mlflow.caSecret.name (not (hasPrefix "https://" .Values.registry.mlflow.url)) -}}
{{- fail "registry.mlflow.caSecret.name needs an https:// registry.mlflow.url: a CA bundle verifies TLS only" -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled .Values.podDisruptionBudget.minAvailable (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable=%d must be below replicaCount=%d, or no node could ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}

{{/* RBAC ----------------------------------------------------------------------------- */}}

{{/* The plurals of the four kinds (must match operator/modelops_api/kinds.py; a unit
     test checks). */}}
{{- define "modelops.plurals" -}}
pruneretrains unlearnrequests loratransfers modeladaptations
{{- end -}}

{{/* What the operator does in every namespace it serves, and nothing more:
     - the four kinds: watch them, read one, patch its status subresource (never the
       spec, never create or delete them);
     - Jobs: watch the ones it labelled, list by label, create and delete (old runs);
     - Pods: list by label (termination messages of Job pods);
     - ConfigMaps: create (the validated spec of a Job; never read or changed after);
     - Events: create (reported on the resources);
     - Secrets: get (by name, for drift-trigger credentials; never list or watch);
     - ModelVersions (issue 15): create them (one per published output) and patch their
       status; never update, patch or delete a version's spec (versions are records);
     - ModelRollouts: watch them, read one, patch its status (never the spec);
     - KServe InferenceServices: watch them, read one, patch the predictor's storageUri
       and canaryTrafficPercent (never create or delete one). */}}
{{- define "modelops.rules" -}}
- apiGroups: ["modelops.dev"]
  resources:
  {{- range (include "modelops.plurals" . | splitList " ") }}
  - {{ . }}
  {{- end }}
  verbs: ["get", "list", "watch"]
- apiGroups: ["modelops.dev"]
  resources:
  {{- range (include "modelops.plurals" . | splitList " ") }}
  - {{ . }}/status
  {{- end }}
  verbs: ["get", "patch"]
- apiGroups: ["modelops.dev"]
  resources: ["modelversions"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["modelops.dev"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["modelops.dev"]
  resources: ["modelversions/status", "modelrollouts/status"]
  verbs: ["get", "patch"]
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.readSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.jobset.enabled }}
# resources.nodes > 1 runs as a JobSet (jobset.x-k8s.io, installed beside modelops).
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["get", "list", "watch", "create", "delete"]
{{- end }}
{{- if .Values.policy.enabled }}
# ModelOpsPolicy objects of a namespace labelled modelops.dev/policy=namespace, and that
# label on the namespace (get by name only, never list).
- apiGroups: ["modelops.dev"]
  resources: ["modelopspolicies"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- end -}}

{{- define "modelops.policyName" -}}
{{- default (include "modelops.fullname" .) .Values.policy.name -}}
{{- end -}}
