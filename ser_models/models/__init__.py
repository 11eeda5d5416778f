"""Model families of the four seed papers and the FG_CME paper's baselines; each module registers itself."""
