"""`livecam serve`: the HTTP app and its API (`app`), the guards every request passes (`guards`), running it
(`runner`), the live session it controls (`session`, with its `switch_renderer` and `latest_sink`), the WebRTC
track and viewers (`webrtc`), and the studio and viewer pages (`web/`)."""
