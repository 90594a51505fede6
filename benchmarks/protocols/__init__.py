"""Protocol execution: every configured method on the transfer protocol's test images and on episodic episodes."""
