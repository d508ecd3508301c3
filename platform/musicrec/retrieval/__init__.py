"""Retrieval (docs/models.md, "Retrieval"): a faiss index of a model's item embeddings
(:mod:`.index`), the task candidate filters on top of it (:mod:`.filters`), a model with its index
(:mod:`.retriever`) and the batch recommendations verb (:mod:`.recommend`)."""
