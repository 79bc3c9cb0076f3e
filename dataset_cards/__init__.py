"""Dataset/model cards rendered from artifact manifests."""
