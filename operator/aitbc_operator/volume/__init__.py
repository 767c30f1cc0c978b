"""What the init container does on the chain volume; runs inside the pod (`aitbc-operator volume ...`)."""
