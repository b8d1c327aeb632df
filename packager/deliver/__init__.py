"""Delivery: getting a built image to where it runs (shared DESIGN.md, "deliver").

    images          IMAGE|DIR arguments (an export directory, OCI layout, docker-archive, registry ref) to one image;
                    layer chain IDs, the identity Docker engines give stacked layers
    journal         what a delivery has done and has still to do, for --plan and for errors half-way
    aws             boto3 clients (standard credential chain, region, endpoint override) and error translation
    lambda_deploy   ECR repository, push, function create/update, version, alias; rollback
    archive         docker-archives that carry only some layer blobs (bundles, deltas) with checksum files
    device          a Docker engine behind SSH: what it has, sending only what it lacks, the service, rollback
    compose, k8s    Compose and Kubernetes manifests for an image
"""
