"""Assets: résumés, detailed résumés and job descriptions (files, text, language)."""
