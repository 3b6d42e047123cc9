"""Billing: plans bought through Stripe, Razorpay and Dodo Payments, and what their providers tell us.

- checkout.py: orders and the providers' checkouts of them; Razorpay Checkout's payment verification.
- webhooks.py: the one applier of the typed events the gateways (app/integrations/payments) read from
  their providers' signed webhooks.
- orders.py: an order's payment (paid in full, once) and refunds; adjustments.py: refunds and disputes as
  facts, applied to the order's money and credits in any delivery order.
- disputes.py: chargebacks of an order's payment and their outcome.
- invoices.py: refunds and disputes of a subscription renewal's payment (no order).
- subscriptions.py: paid periods and status changes; the plan follows the subscriptions still running.
- gateways.py: the configured gateways and what their failures mean to a client.
"""
