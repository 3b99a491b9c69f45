// placeholder replaced by the site work
