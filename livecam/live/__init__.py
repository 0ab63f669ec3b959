"""The live camera: capture (`capture`), the frame and its latest-value slot (`frame`), the loop that tracks,
renders and publishes (`loop`), its statistics (`stats`), the outputs (`outputs`), and `run`, which assembles
them from config and runs them (`livecam run`)."""
