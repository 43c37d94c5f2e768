"""Services: a résumé, a job description and an optional detailed résumé, summarized and matched."""
