"""Delivery: getting a built image to where it runs (shared DESIGN.md, "deliver").

    images          IMAGE|DIR arguments (an export directory, OCI layout, docker-archive, registry ref) to one image;
                    layer chain IDs, the identity Docker engines give stacked layers
    journal         what a delivery has done and has still to do, for --plan and for errors half-way
    aws             boto3 clients (standard credential chain, region, endpoint override) and error translation
    lambda_deploy   ECR repository, push, function create/update, version, alias; rollback
    archive         docker-archives that carry only some layer blobs (bundles, deltas) with checksum files
    device          a Docker engine behind SSH: what it has, sending only what it lacks, the service, rollback
    fleet, rollout  FLEET.toml (devices, stages, budgets) and a staged, health-gated, resumable rollout over it
    manifests       what an image needs as a service (ports, user, resources, placement, rollout policy)
    compose, k8s    Compose (one host or a Swarm stack) and Kubernetes manifests for an image
    proxy           the front proxy image (HAProxy from Debian packages) that gives several replicas one address
    swarm           deploying a stack to a Docker Swarm and moving it: rollback, canary promote and abort
"""
