#!/usr/bin/env bash
# kompress on a local kind cluster, end to end: create the cluster, build and load the images,
# start a throwaway MinIO, install the chart, run the sample and show its result.
# Needs: docker, kind, kubectl, helm.     Clean up: kind delete cluster --name kompress
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${KIND_CLUSTER:-kompress}"
tag="quickstart"
registry="ghcr.io/kompress"

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
kubectl config use-context "kind-$cluster"

REGISTRY="$registry" scripts/build-images "$tag"
for image in operator job; do   # the GPU image is not needed on kind
    kind load docker-image --name "$cluster" "$registry/kompress-$image:$tag"
done

kubectl create namespace kompress-system --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f deploy/kind/minio.yaml
kubectl -n kompress-system rollout status deployment/minio --timeout=180s
kubectl -n kompress-system wait --for=condition=Complete job/minio-bucket --timeout=180s

# The Jobs read their S3 credentials from this Secret in the run's namespace.
kubectl -n default create secret generic kompress-s3 \
    --from-literal=AWS_ACCESS_KEY_ID=kompress --from-literal=AWS_SECRET_ACCESS_KEY=kompress-quickstart \
    --dry-run=client -o yaml | kubectl apply -f -

helm upgrade --install kompress charts/kompress --namespace kompress-system \
    --set image.tag="$tag" --set jobs.cpuImage.tag="$tag" --set jobs.pullPolicy=Never --set image.pullPolicy=Never \
    --set artifacts.uri=s3://kompress/runs --set artifacts.secretName=kompress-s3 \
    --set-json 'policy.storageLocations=["s3://kompress/runs/{namespace}/", "/opt/kompress/examples/"]' \
    --set-string jobs.env.AWS_ENDPOINT_URL=http://minio.kompress-system:9000 \
    --set-string jobs.env.AWS_DEFAULT_REGION=us-east-1 \
    --set jobs.resources.requests.cpu=500m --set jobs.resources.requests.memory=1Gi \
    --wait --timeout 5m

kubectl -n default apply -f deploy/samples/cpu/digits-cnn.yaml
kubectl -n default wait --for=condition=Succeeded mopt/digits-cnn --timeout=15m
kubectl -n default get mopt digits-cnn
