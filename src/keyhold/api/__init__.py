"""The gRPC edge: servicers, the policy interceptor, proto⇄domain mapping, error mapping."""
