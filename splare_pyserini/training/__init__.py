"""Training: retrieval fine-tuning (SPLARE), TopK SAEs and the SAE sweep; no JVM in this process."""
