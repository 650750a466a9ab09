//! Simulated Calendly, Webex and SCIM 2.0 services (placeholder; see the sandbox issue).
