"""The networks and the mathematics on them: DGC, the baseline classifier, every loss, the
Bayes rule, generation, novelty scores and priors."""
