"""What two or more duties really share: health probes and S3 streaming."""
