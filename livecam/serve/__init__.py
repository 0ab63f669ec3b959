"""`livecam serve`: the HTTP app and its API (`app`), the live session it controls (`session`), the WebRTC
track and viewers (`webrtc`), and the studio and viewer pages (`web/`)."""
