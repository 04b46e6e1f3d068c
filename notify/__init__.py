"""Notification routing: reach people whose app is closed (Web Push, FCM, APNs)."""
