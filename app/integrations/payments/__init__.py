"""Payment providers behind one Protocol (base.PaymentGateway): Stripe, Razorpay and Dodo Payments, one
module each. A gateway opens checkouts and reads its provider's signed webhooks into typed events
(base.PaymentEvent); only these modules speak to the providers or read their JSON."""
