"""ffrtmp-agent: a distributed video transcoding master, worker agent and CLI."""
