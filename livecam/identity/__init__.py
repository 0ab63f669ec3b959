"""The user's identity: enrolment from selfies (`enroll`, `livecam enroll`) and the store of enrolled
identities (`store`, `livecam identities`)."""
