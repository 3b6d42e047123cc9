"""AI clones: photo sets, personal models trained on them, generations, prompt enhancement, plan quotas."""
