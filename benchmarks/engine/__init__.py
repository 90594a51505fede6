"""The run and its phases: content-addressed phase store, code digests, the run context, the episodic split."""
