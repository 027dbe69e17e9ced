"""Fine-tuning: TrainingSpec with PEFT methods, saved activations, candidate peaks, throughput."""
