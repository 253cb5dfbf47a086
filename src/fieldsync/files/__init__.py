"""Files and images: content-addressed blobs behind file and image columns."""
